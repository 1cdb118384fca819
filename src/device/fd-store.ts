// Where deviced keeps each fuse-loop device's descriptors (/dev/fuse and /dev/loopN) so that they
// outlive it: while any copy is open the kernel keeps the FUSE connection (requests queue, nothing
// fails) and the loop device bound, and the next deviced takes both over.
//
// Two stores, one contract (modelled on systemd's): put a named descriptor, remove it, and on start
// get back what the previous process stored.
//   systemd  under systemd ($NOTIFY_SOCKET): sd_notify FDSTORE=1/FDNAME=…, FDSTOREREMOVE=1; the fds
//            come back through $LISTEN_FDS/$LISTEN_FDNAMES (the unit needs FileDescriptorStoreMax=).
//   holder   otherwise: obd-fd-holder, started on the first put (or found running), on
//            <state>/fd-holder.sock; it exits once it holds nothing and deviced is gone.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as addon from '../addon';
import type { Logger } from '../log';

/** A device's live kernel side, as the store keeps it (one descriptor per name). */
export interface HeldDevice {
  fuseFd?: number;
  loopFd?: number;
}

const KINDS = { fuse: 'fuseFd', loop: 'loopFd' } as const;
type Kind = keyof typeof KINDS;

function nameOf(id: string, kind: Kind): string {
  return `${id}.${kind}`; // device ids never contain ':' (systemd's FDNAME separator)
}

function parseName(name: string): { id: string; kind: Kind } | undefined {
  const dot = name.lastIndexOf('.');
  const kind = name.slice(dot + 1);
  return dot > 0 && kind in KINDS ? { id: name.slice(0, dot), kind: kind as Kind } : undefined;
}

export abstract class DeviceFdStore {
  abstract readonly kind: 'systemd' | 'holder';
  private inheritedDevices = new Map<string, HeldDevice>();

  /** What the previous deviced stored, by device id; the descriptors are ours now. Taken once. */
  takeInherited(): Map<string, HeldDevice> {
    const m = this.inheritedDevices;
    this.inheritedDevices = new Map();
    return m;
  }

  protected addInherited(name: string, fd: number): void {
    const p = parseName(name);
    if (!p) {
      addon.closeFd(fd);
      return;
    }
    const d = this.inheritedDevices.get(p.id) ?? {};
    if (d[KINDS[p.kind]] !== undefined) addon.closeFd(d[KINDS[p.kind]]!);
    d[KINDS[p.kind]] = fd;
    this.inheritedDevices.set(p.id, d);
  }

  /** Keeps copies of the device's descriptors (ours stay open). */
  async keep(id: string, dev: Required<HeldDevice>): Promise<void> {
    await this.put(nameOf(id, 'fuse'), dev.fuseFd);
    await this.put(nameOf(id, 'loop'), dev.loopFd);
  }

  /** Drops the copies: from now on our own descriptors are the last ones. */
  async forget(id: string): Promise<void> {
    await this.remove(nameOf(id, 'fuse'));
    await this.remove(nameOf(id, 'loop'));
  }

  protected abstract put(name: string, fd: number): Promise<void>;
  protected abstract remove(name: string): Promise<void>;
  abstract close(): void;
}

/** systemd's file descriptor store of the unit we run in. */
export class SystemdFdStore extends DeviceFdStore {
  readonly kind = 'systemd';

  constructor(private readonly notifySocket: string) {
    super();
    // sd_listen_fds: the fds start at 3 and are ours only if LISTEN_PID names us.
    const count = Number(process.env.LISTEN_FDS ?? 0);
    if (Number(process.env.LISTEN_PID) === process.pid && count > 0) {
      const names = (process.env.LISTEN_FDNAMES ?? '').split(':');
      for (let i = 0; i < count; i++) {
        addon.setCloexec(3 + i);
        this.addInherited(names[i] ?? '', 3 + i);
      }
    }
    delete process.env.LISTEN_FDS;
    delete process.env.LISTEN_PID;
    delete process.env.LISTEN_FDNAMES;
  }

  /** sd_notify without descriptors (READY=1, STOPPING=1). */
  notify(text: string): void {
    addon.sdNotify(this.notifySocket, text);
  }

  protected async put(name: string, fd: number): Promise<void> {
    addon.sdNotify(this.notifySocket, `FDSTORE=1\nFDNAME=${name}`, [fd]);
  }

  protected async remove(name: string): Promise<void> {
    addon.sdNotify(this.notifySocket, `FDSTOREREMOVE=1\nFDNAME=${name}`);
  }

  close(): void {}
}

/** Our obd-fd-holder process. */
export class HolderFdStore extends DeviceFdStore {
  readonly kind = 'holder';
  private sock = -1;
  private readonly held = new Map<string, number>(); // what we put, to re-put into a restarted holder

  private constructor(
    readonly socketPath: string,
    private readonly logFile: string,
    private readonly log: Logger,
    private readonly program: string,
  ) {
    super();
  }

  /** Connects to a running holder and takes what it holds; none running is a first start. */
  static open(stateDir: string, log: Logger, program = addon.FD_HOLDER_PROGRAM): HolderFdStore {
    const s = new HolderFdStore(path.join(stateDir, 'fd-holder.sock'), path.join(stateDir, 'fd-holder.log'), log, program);
    if (s.tryConnect()) {
      addon.sendFds(s.sock, 'GET');
      for (;;) {
        const m = addon.recvFds(s.sock, 5000);
        if (m.text === 'END') break;
        if (m.text.startsWith('FD ') && m.fds.length === 1) s.addInherited(m.text.slice(3), m.fds[0]);
        else m.fds.forEach((fd) => addon.closeFd(fd));
      }
    }
    return s;
  }

  private tryConnect(): boolean {
    try {
      this.sock = addon.seqpacketConnect(this.socketPath);
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ECONNREFUSED') throw err;
      return false;
    }
  }

  private async connectOrStart(): Promise<void> {
    if (this.sock >= 0 || this.tryConnect()) return;
    if (!fs.existsSync(this.program)) throw new Error(`fd holder ${this.program} is missing (build the addon)`);
    const out = fs.openSync(this.logFile, 'a', 0o600);
    try {
      // Its own session: a signal to deviced's process group (a ^C, a unit's stop) does not reach it.
      spawn(this.program, [this.socketPath], { detached: true, stdio: ['ignore', out, out] }).unref();
    } finally {
      fs.closeSync(out);
    }
    for (let i = 0; i < 200 && !this.tryConnect(); i++) await new Promise((r) => setTimeout(r, 10));
    if (this.sock < 0) throw new Error(`fd holder did not come up on ${this.socketPath} (see ${this.logFile})`);
    this.log.log('info', 'started fd holder', { socket: this.socketPath });
    // A holder that died took its copies with it: give the new one ours.
    for (const [name, fd] of this.held) this.request(`PUT ${name}`, [fd]);
  }

  private request(text: string, fds: number[] = []): void {
    addon.sendFds(this.sock, text, fds);
    const m = addon.recvFds(this.sock, 5000);
    m.fds.forEach((fd) => addon.closeFd(fd));
    if (m.text !== 'OK') throw new Error(`fd holder: ${text.split(' ')[0]}: ${m.text}`);
  }

  /** One retry through a fresh holder when the connection broke (the holder was killed). */
  private async call(text: string, fds: number[] = []): Promise<void> {
    await this.connectOrStart();
    try {
      this.request(text, fds);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EPIPE' && code !== 'ECONNRESET' && code !== 'ENOTCONN') throw err;
      this.log.log('warn', 'fd holder connection lost; starting a new holder', { err: (err as Error).message });
      addon.closeFd(this.sock);
      this.sock = -1;
      await this.connectOrStart();
      this.request(text, fds);
    }
  }

  protected async put(name: string, fd: number): Promise<void> {
    this.held.set(name, fd);
    await this.call(`PUT ${name}`, [fd]);
  }

  protected async remove(name: string): Promise<void> {
    this.held.delete(name);
    if (this.sock < 0 && !this.tryConnect()) return; // no holder: nothing held
    await this.call(`DEL ${name}`);
  }

  /** Our connection goes; the holder stays while it holds something (our exit or crash alike). */
  close(): void {
    if (this.sock >= 0) addon.closeFd(this.sock);
    this.sock = -1;
  }
}

/** systemd's store when we run under systemd with a notify socket, else our holder. */
export function openDeviceFdStore(stateDir: string, log: Logger): DeviceFdStore {
  const notify = process.env.NOTIFY_SOCKET;
  if (notify) return new SystemdFdStore(notify);
  return HolderFdStore.open(stateDir, log);
}
