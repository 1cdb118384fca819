// obd.device.v1 over gRPC: loading the proto, the server handlers, and the client the CLI and the
// snapshotter use. Errors cross as gRPC status codes and come back as DeviceError of the same kind.
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { DeviceError, grpcCodeOf, kindOfGrpc } from './errors';
import type { DeviceInfo, DeviceManager, DeviceStatsInfo } from './manager';

const PROTO = path.join(__dirname, '..', '..', '..', 'proto', 'device.proto');

function loadPackage(): grpc.GrpcObject {
  const def = protoLoader.loadSync(PROTO, { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true });
  return grpc.loadPackageDefinition(def);
}

type ServiceCtor = grpc.ServiceClientConstructor;

function devicesService(): ServiceCtor {
  const pkg = loadPackage() as unknown as { obd: { device: { v1: { Devices: ServiceCtor } } } };
  return pkg.obd.device.v1.Devices;
}

function unary<Req, Res>(fn: (req: Req) => Promise<Res> | Res): grpc.handleUnaryCall<Req, Res> {
  return (call, cb) => {
    Promise.resolve()
      .then(() => fn(call.request))
      .then(
        (res) => cb(null, res),
        (err: Error) => cb({ code: grpcCodeOf(err), details: err.message } as grpc.ServiceError),
      );
  };
}

export function addDevicesService(server: grpc.Server, mgr: DeviceManager): void {
  server.addService(devicesService().service, {
    Attach: unary(async (req: { id: string; configPath: string; configJson: string }) => ({
      device: await mgr.attach({ id: req.id, configPath: req.configPath, configJson: req.configJson }),
    })),
    Detach: unary(async (req: { id: string; force: boolean }) => {
      if (!req.id) throw new DeviceError('InvalidArgument', 'detach: give a device id or path');
      await mgr.detach(req.id, req.force);
      return {};
    }),
    List: unary(() => ({ devices: mgr.list() })),
    Stats: unary((req: { id: string }) => ({ devices: mgr.stats(req.id || undefined) })),
  });
}

/** A client of deviced's socket; every call has a deadline so a wedged daemon cannot hang callers. */
export class DeviceClient {
  private readonly client: grpc.Client;

  constructor(readonly address: string) {
    const Ctor = devicesService();
    this.client = new Ctor(`unix:${address}`, grpc.credentials.createInsecure());
  }

  private call<Res>(method: string, req: object, timeoutMs: number): Promise<Res> {
    return new Promise((resolve, reject) => {
      const fn = (this.client as unknown as Record<string, Function>)[method].bind(this.client);
      fn(req, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: Res) => {
        if (!err) return resolve(res);
        if (err.code === grpc.status.UNAVAILABLE)
          return reject(new DeviceError('Unavailable', `deviced at ${this.address} is not reachable: ${err.details || err.message}`));
        reject(new DeviceError(kindOfGrpc(err.code), err.details || err.message));
      });
    });
  }

  async attach(req: { id?: string; configPath?: string; configJson?: string }, timeoutMs = 120_000): Promise<DeviceInfo> {
    const res = await this.call<{ device: DeviceInfo }>('Attach', req, timeoutMs);
    return res.device;
  }

  async detach(id: string, force = false, timeoutMs = 120_000): Promise<void> {
    await this.call('Detach', { id, force }, timeoutMs);
  }

  async list(timeoutMs = 30_000): Promise<DeviceInfo[]> {
    return (await this.call<{ devices: DeviceInfo[] }>('List', {}, timeoutMs)).devices;
  }

  async stats(id = '', timeoutMs = 30_000): Promise<DeviceStatsInfo[]> {
    return (await this.call<{ devices: DeviceStatsInfo[] }>('Stats', { id }, timeoutMs)).devices;
  }

  close(): void {
    this.client.close();
  }
}
