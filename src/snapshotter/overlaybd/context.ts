// What the parts of the overlaybd snapshotter share: the config, the log, the device client and one
// lock per device (attach + mount of one device must not interleave), plus the device-id scheme.
import crypto from 'node:crypto';
import path from 'node:path';
import type { ObdConfig } from '../../config';
import type { Logger } from '../../log';
import { KeyedLock } from '../keyed-lock';
import { BlockDevices } from './block-device';

export class OverlaybdContext {
  readonly devices: BlockDevices;
  readonly deviceLock = new KeyedLock();
  private readonly idPrefix: string;

  constructor(
    readonly cfg: ObdConfig,
    readonly log: Logger,
  ) {
    this.devices = new BlockDevices(cfg.deviceAddress, log);
    // Device ids are per host (one deviced); the root keeps two snapshotters on one deviced apart.
    this.idPrefix = 'sn' + crypto.createHash('sha256').update(path.resolve(cfg.root)).digest('hex').slice(0, 8);
  }

  /** The shared read-only device of an image layer. */
  layerDeviceId(id: number): string {
    return `${this.idPrefix}-l${id}`;
  }
  /** The private writable device of a dir/dev snapshot. */
  writableDeviceId(id: number): string {
    return `${this.idPrefix}-w${id}`;
  }
}
