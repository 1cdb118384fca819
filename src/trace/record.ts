// `obd record-trace`: runs an image's workload once in a container whose snapshot carries the
// record-trace labels; deviced records the blob ranges the workload touches into the trace file
// (see trace.ts). Containers started later with the label record-trace-path=<that file> get them
// prefetched in the background, in order, as soon as their image device is attached.
import { execFile, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Labels } from '../labels';
import { readTraceFile } from './trace';

export interface RecordTraceOptions {
  address: string;
  namespace: string;
  snapshotter: string;
  output: string;
  timeSec: number;
  runcRoot?: string;
  command: string[];
  log?: (line: string) => void;
}

function ctr(o: RecordTraceOptions, args: string[], timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('ctr', ['--address', o.address, '--namespace', o.namespace, ...args], { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, out, stderr) =>
      err ? reject(new Error(`ctr ${args.join(' ')}: ${stderr.trim() || err.message}`)) : resolve(out),
    );
  });
}

export async function recordTrace(image: string, o: RecordTraceOptions): Promise<{ ranges: number; bytes: number; seconds: number }> {
  const log = o.log ?? (() => undefined);
  const output = path.resolve(o.output);
  fs.mkdirSync(path.dirname(output), { recursive: true });
  fs.writeFileSync(output, ''); // empty ⇒ record
  const id = `obd-record-trace-${crypto.randomBytes(4).toString('hex')}`;
  const args = [
    '--address', o.address, '--namespace', o.namespace, 'run', '--rm',
    ...(o.runcRoot ? ['--runc-root', o.runcRoot] : []),
    '--snapshotter', o.snapshotter,
    '--snapshotter-label', `${Labels.recordTrace}=yes`,
    '--snapshotter-label', `${Labels.recordTracePath}=${output}`,
    image, id, ...o.command,
  ];
  const t0 = Date.now();
  log(`running ${image} for at most ${o.timeSec} s, recording into ${output}`);
  const child = spawn('ctr', args, { stdio: ['ignore', 'inherit', 'inherit'] });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => resolve(code));
  });
  const timer = setTimeout(() => {
    log(`--time ${o.timeSec} s reached: stopping the container`);
    void ctr(o, ['task', 'kill', '-s', 'SIGTERM', id]).catch(() => undefined);
    setTimeout(() => void ctr(o, ['task', 'kill', '-s', 'SIGKILL', id]).catch(() => undefined), 5000).unref();
  }, o.timeSec * 1000);
  const code = await exited.finally(() => clearTimeout(timer));
  if (code !== 0 && Date.now() - t0 < o.timeSec * 1000) log(`the workload exited with ${code}`);
  const ranges = await readTraceFile(output);
  if (ranges.length === 0) throw new Error(`no block was fetched while the workload ran: is ${image} an overlaybd image run with snapshotter ${o.snapshotter}?`);
  return { ranges: ranges.length, bytes: ranges.reduce((n, r) => n + r.length, 0), seconds: (Date.now() - t0) / 1000 };
}
