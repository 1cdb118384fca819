// obd.device.v1's client side, used by the CLI and the snapshotter: gRPC status codes come back as
// DeviceError of the same kind.
import * as grpc from '@grpc/grpc-js';
import { devicesService } from './api';
import { kindOfGrpcStatus } from '../grpc-status';
import { DeviceError } from './errors';
import type { FetchTotalsInfo } from './fetch-counters';
import type { DeviceInfo, DeviceStatsInfo } from './manager';

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
        reject(new DeviceError(kindOfGrpcStatus(err.code), err.details || err.message));
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

  /** deviced-wide counters since it started (they keep the bytes of detached devices). */
  async totals(timeoutMs = 30_000): Promise<FetchTotalsInfo> {
    return (await this.call<{ totals: FetchTotalsInfo }>('Stats', { id: '' }, timeoutMs)).totals;
  }

  close(): void {
    this.client.close();
  }
}
