// Plays PID 1's part for one service, since the test machines do not run systemd: the notify socket
// the service talks to (READY=1, STOPPING=1, FDSTORE=1 + FDNAME with descriptors, FDSTOREREMOVE=1),
// the file descriptor store, and the hand-back on the next start ($LISTEN_FDS/$LISTEN_FDNAMES, fds
// from 3). Listening sockets of a .socket unit are made with `listen`.
import fs from 'node:fs';
import path from 'node:path';
import * as addon from '../../src/addon';

export class FakeSystemd {
  readonly notifySocket: string;
  readonly messages: string[] = [];
  private readonly sock: number;
  private readonly stored = new Map<string, number>(); // FDNAME → fd (one per name, as deviced stores them)
  private readonly listeners: number[] = [];

  constructor(dir: string) {
    this.notifySocket = path.join(dir, 'notify.sock');
    this.sock = addon.datagramBind(this.notifySocket);
  }

  /** Takes every notification sent so far (and applies FDSTORE/FDSTOREREMOVE). */
  drain(): string[] {
    const got: string[] = [];
    for (;;) {
      let m: addon.FdMessage;
      try {
        m = addon.recvFds(this.sock, 0);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ETIMEDOUT') return got;
        throw err;
      }
      got.push(m.text);
      this.messages.push(m.text);
      const kv = new Map(m.text.split('\n').map((l) => [l.split('=')[0], l.slice(l.indexOf('=') + 1)] as [string, string]));
      const name = kv.get('FDNAME') ?? 'stored';
      if (kv.get('FDSTORE') === '1') {
        // systemd keeps one entry per open file description; re-storing the same one changes nothing.
        const old = this.stored.get(name);
        if (old !== undefined) addon.closeFd(old);
        this.stored.set(name, m.fds[0]);
        m.fds.slice(1).forEach((fd) => addon.closeFd(fd));
      } else {
        m.fds.forEach((fd) => addon.closeFd(fd));
      }
      if (kv.get('FDSTOREREMOVE') === '1') {
        const old = this.stored.get(name);
        if (old !== undefined) addon.closeFd(old);
        this.stored.delete(name);
      }
    }
  }

  storedNames(): string[] {
    this.drain();
    return [...this.stored.keys()].sort();
  }

  /** A listening unix stream socket at `socketPath`, kept here as a .socket unit keeps it. */
  listen(socketPath: string): number {
    fs.mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o700 }); // DirectoryMode=
    const fd = addon.streamListen(socketPath);
    this.listeners.push(fd);
    return fd;
  }

  /** What the next start of the service gets: NOTIFY_SOCKET, and the stored fds as LISTEN_FDS. */
  launch(extraFds: number[] = []): { env: Record<string, string>; fds: number[] } {
    this.drain();
    const names = [...this.stored.keys()];
    const fds = [...extraFds, ...names.map((n) => this.stored.get(n)!)];
    const env: Record<string, string> = { NOTIFY_SOCKET: this.notifySocket };
    if (fds.length) env.LISTEN_FDNAMES = [...extraFds.map(() => 'socket'), ...names].join(':');
    return { env, fds };
  }

  close(): void {
    for (const fd of this.stored.values()) addon.closeFd(fd);
    this.stored.clear();
    this.listeners.forEach((fd) => addon.closeFd(fd));
    addon.closeFd(this.sock);
  }
}
