// Runs a bench's baseline commands (curl, obd-fetch-floor) from one shell started at the beginning.
// Spawning from the measuring process forks it, which leaves every page of it copy-on-write: its
// next write to each page (the remote file's reused fetch buffers, say) takes a fault, ~30k faults
// per 256 MiB read that a deviced, which does not fork while it serves reads, never pays.
import { ChildProcessByStdio, spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';

const END = '__obd_command_end';

export class CommandShell {
  private readonly sh: ChildProcessByStdio<Writable, Readable, null>;
  private out = '';
  private waiting?: { resolve: (stdout: string) => void; reject: (err: Error) => void; what: string };
  private queue: Promise<unknown> = Promise.resolve();

  constructor() {
    this.sh = spawn('sh', ['-c', `while IFS= read -r line; do eval "$line"; printf '\\n${END} %d\\n' $?; done`], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.sh.stdout.setEncoding('utf8');
    this.sh.stdout.on('data', (chunk: string) => this.received(chunk));
    this.sh.on('exit', () => this.waiting?.reject(new Error(`the bench's command shell exited while running ${this.waiting.what}`)));
  }

  /** The standard output of `argv` run to its end; fails naming the command when it exits non-zero. */
  run(argv: string[]): Promise<string> {
    const next = this.queue.then(() => new Promise<string>((resolve, reject) => {
      this.waiting = { resolve, reject, what: argv[0] };
      this.sh.stdin.write(argv.map(quote).join(' ') + '\n');
    }));
    this.queue = next.catch(() => undefined);
    return next;
  }

  close(): void {
    this.sh.stdin.end();
  }

  private received(chunk: string): void {
    this.out += chunk;
    const m = new RegExp(`\\n${END} (\\d+)\\n$`).exec(this.out);
    if (!m || !this.waiting) return;
    const stdout = this.out.slice(0, m.index);
    const w = this.waiting;
    this.out = '';
    this.waiting = undefined;
    if (m[1] === '0') w.resolve(stdout);
    else w.reject(new Error(`${w.what} exited with status ${m[1]}`));
  }
}

function quote(arg: string): string {
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}
