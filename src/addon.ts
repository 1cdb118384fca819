// The only TS file that loads the native addon; everything else imports its typed API from here.
import path from 'node:path';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const native = require(path.join(__dirname, '..', '..', 'build', 'Release', 'obd_addon.node'));

export function addonVersion(): string {
  return native.version();
}
