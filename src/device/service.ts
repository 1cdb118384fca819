// obd.device.v1's server side: deviced's handlers over the DeviceManager. Errors cross as gRPC
// status codes (client.ts turns them back into DeviceError of the same kind).
import * as grpc from '@grpc/grpc-js';
import { devicesService } from './api';
import { grpcStatusOf } from '../grpc-status';
import { DeviceError } from './errors';
import { totalsMessage } from './fetch-counters';
import type { DeviceManager } from './manager';

function unary<Req, Res>(fn: (req: Req) => Promise<Res> | Res): grpc.handleUnaryCall<Req, Res> {
  return (call, cb) => {
    Promise.resolve()
      .then(() => fn(call.request))
      .then(
        (res) => cb(null, res),
        (err: Error) => cb({ code: grpcStatusOf(err, grpc.status.INTERNAL), details: err.message } as grpc.ServiceError),
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
    Stats: unary((req: { id: string }) => ({ devices: mgr.stats(req.id || undefined), totals: totalsMessage(mgr.totals()) })),
  });
}
