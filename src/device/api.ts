// obd.device.v1 (proto/device.proto): the service definition deviced's server and DeviceClient share.
import type * as grpc from '@grpc/grpc-js';
import { loadProto } from '../proto';

export type DevicesServiceCtor = grpc.ServiceClientConstructor;

export function devicesService(): DevicesServiceCtor {
  const pkg = loadProto('device.proto', { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true }) as unknown as {
    obd: { device: { v1: { Devices: DevicesServiceCtor } } };
  };
  return pkg.obd.device.v1.Devices;
}
