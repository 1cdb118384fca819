// The many-layer cold-start workload (issue "cold start that fetches only what the workload
// reads"): busybox plus app layers that each hold filler files (half random, half text) and a few
// small data files placed between them; the entrypoint reads every data file and prints READY.
// The cold-start benchmark builds it at full size; the acceptance test at a small one.
import crypto from 'node:crypto';
import { busyboxTestImage, type ImageSpec, type TarEntry } from './images';

export interface WorkloadImageOptions {
  appLayers: number;
  fillerMiBPerLayer: number;
  dataFilesPerLayer: number;
  dataFileKiB: number;
}

export const WORKLOAD_SCRIPT = 'cat /app/l*/data/* > /dev/null && echo READY';

const WORDS = 'the of and to in is was that for on with as by at from his her they this which be are or an have not one had but were all there'.split(' ');

/** Compressible, text-like bytes (words and spaces), different each call. */
export function textBytes(n: number): Buffer {
  const out = Buffer.alloc(n);
  const rnd = crypto.randomBytes(Math.ceil(n / 3) + 1);
  let o = 0;
  for (let i = 0; o < n; i++) {
    const w = WORDS[rnd[i % rnd.length] % WORDS.length] + (rnd[(i * 7) % rnd.length] % 11 === 0 ? '\n' : ' ');
    o += out.write(w, o);
  }
  return out;
}

export function workloadImageSpec(o: WorkloadImageOptions): { spec: ImageSpec; readBytes: number } {
  const base = busyboxTestImage().spec.layers[0] as TarEntry[];
  const layers: TarEntry[][] = [base];
  const MiB = 1 << 20;
  for (let l = 0; l < o.appLayers; l++) {
    const dir = `app/l${l}`;
    const entries: TarEntry[] = [{ path: 'app', type: 'dir' }, { path: dir, type: 'dir' }, { path: `${dir}/data`, type: 'dir' }];
    const fillers = Math.max(2, Math.ceil(o.fillerMiBPerLayer / 4));
    const fillerBytes = Math.floor((o.fillerMiBPerLayer * MiB) / fillers);
    // data files between filler files, so they are spread over the layer
    const every = Math.max(1, Math.floor(fillers / Math.max(1, o.dataFilesPerLayer)));
    let d = 0;
    for (let f = 0; f < fillers; f++) {
      entries.push({ path: `${dir}/filler${f}`, type: 'file', data: f % 2 === 0 ? crypto.randomBytes(fillerBytes) : textBytes(fillerBytes) });
      if (f % every === 0 && d < o.dataFilesPerLayer) {
        const kib = o.dataFileKiB * 1024;
        entries.push({ path: `${dir}/data/f${d}`, type: 'file', data: d % 2 === 0 ? crypto.randomBytes(kib) : textBytes(kib) });
        d++;
      }
    }
    for (; d < o.dataFilesPerLayer; d++) entries.push({ path: `${dir}/data/f${d}`, type: 'file', data: crypto.randomBytes(o.dataFileKiB * 1024) });
    layers.push(entries);
  }
  return {
    spec: { layers, cmd: ['/bin/sh', '-c', WORKLOAD_SCRIPT], gzip: true },
    readBytes: o.appLayers * o.dataFilesPerLayer * o.dataFileKiB * 1024,
  };
}
