// The .proto files under proto/ at the repository root, shared by every gRPC server and client
// (snapshots.v1, obd.device.v1, containerd's own services used by rpull).
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const MARKER = 'device.proto';

/** proto/ at the repository root: found from src/ (ts) and dist/src/ (js) alike. */
export function protoDir(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'proto');
    if (fs.existsSync(path.join(candidate, MARKER))) return candidate;
    if (path.dirname(dir) === dir) throw new Error(`proto/${MARKER} not found above ${__dirname}`);
  }
}

/** Loads proto files (paths relative to proto/) into a gRPC package object. */
export function loadProto(files: string | string[], options: Omit<protoLoader.Options, 'includeDirs'>): grpc.GrpcObject {
  return grpc.loadPackageDefinition(protoLoader.loadSync(files, { ...options, includeDirs: [protoDir()] }));
}
