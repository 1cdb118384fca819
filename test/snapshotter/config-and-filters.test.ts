// Pure units: the config schema (ACI compatibility, defaults, errors) and the filter parser.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError, defaultConfig, parseConfig, resolveConfigPath } from '../../src/config';
import { parseFilters } from '../../src/snapshotter/filters';
import { SnapshotError } from '../../src/snapshotter/errors';

describe('config', () => {
  test("accelerated-container-image's shipped config.json loads unchanged, missing keys take defaults", () => {
    const aci = {
      root: '/var/lib/containerd/io.containerd.snapshotter.v1.overlaybd',
      address: '/run/overlaybd-snapshotter/overlaybd.sock',
      verbose: 'info',
      rwMode: 'overlayfs',
      logReportCaller: false,
      autoRemoveDev: false,
      exporterConfig: { enable: false, uriPrefix: '/metrics', port: 9863 },
      mirrorRegistry: [{ host: 'localhost:5000', insecure: true }],
      writableLayerType: 'append',
      defaultFsType: 'ext4',
      rootfsQuota: '',
      tenant: -1,
      turboFsType: ['erofs', 'ext4'],
      asyncRemove: false,
      runtimeType: 'containerd',
    };
    const cfg = parseConfig(aci);
    assert.equal(cfg.address, aci.address);
    assert.deepEqual(cfg.mirrorRegistry, [{ host: 'localhost:5000', insecure: true }]);
    assert.equal(cfg.deviceAddress, '/run/obd/deviced.sock');
    assert.equal(cfg.transport, 'auto');
    assert.deepEqual(cfg.allowedLowerPrefixes, []);
    assert.equal(cfg.cacheConfig.cacheDir, '/var/lib/obd/cache');
  });

  test('defaults match docs/configuration.md; nested objects are completed key by key', () => {
    const d = defaultConfig();
    assert.equal(d.root, '/var/lib/containerd/io.containerd.snapshotter.v1.obd');
    assert.equal(d.address, '/run/obd/snapshotter.sock');
    assert.equal(d.rwMode, 'overlayfs');
    assert.deepEqual(d.exporterConfig, { enable: false, uriPrefix: '/metrics', port: 9863, address: '127.0.0.1', snapshotterPort: 9864 });
    assert.equal(d.traceDir, '');
    assert.equal(d.maxVsizeGB, 64);
    assert.equal(d.download.delay, 600);
    const cfg = parseConfig({ cacheConfig: { cacheSizeGB: 2 }, turboFsType: ['ext4'] });
    assert.equal(cfg.cacheConfig.cacheSizeGB, 2);
    assert.equal(cfg.cacheConfig.cacheDir, '/var/lib/obd/cache');
    assert.deepEqual(cfg.turboFsType, ['ext4', 'erofs'], 'ext4 and erofs are always candidates, as ACI');
  });

  test('errors are ConfigError naming the dotted key and the bad value', () => {
    const err = (() => {
      try {
        parseConfig({ download: { maxMBps: -1 } }, 'f.json');
      } catch (e) {
        return e;
      }
    })();
    assert.ok(err instanceof ConfigError);
    assert.equal(err.key, 'download.maxMBps');
    assert.equal(err.value, -1);
    assert.match(err.message, /^f\.json: config key "download\.maxMBps": must be >= 0 \(got -1\)$/);
  });

  test('config path: --config, then $OBD_CONFIG, then /etc/obd/config.json', () => {
    assert.equal(resolveConfigPath('/a.json', { OBD_CONFIG: '/b.json' }), '/a.json');
    assert.equal(resolveConfigPath(undefined, { OBD_CONFIG: '/b.json' }), '/b.json');
    assert.equal(resolveConfigPath(undefined, {}), '/etc/obd/config.json');
  });
});

describe('filters (containerd syntax)', () => {
  const obj: Record<string, [string, boolean]> = {
    name: ['default/3/sha256:abc', true],
    kind: ['committed', true],
    parent: ['', true],
    'labels.containerd.io/snapshot.ref': ['sha256:abc', true],
    'labels.a b': ['quoted key', true],
  };
  const match = (...f: string[]) => parseFilters(f)((fp) => obj[fp.join('.')] ?? ['', false]);

  test('selectors, quoting, escapes, presence, regexps', () => {
    assert.ok(match());
    assert.ok(match(''));
    assert.ok(match('labels."containerd.io/snapshot.ref"==sha256:abc,parent==""'));
    assert.ok(match('labels."a b"=="quoted key"'));
    assert.ok(match('labels."a b"=="quoted\\x20key"'));
    assert.ok(match('name~=/^default\\/3\\//'));
    assert.ok(match('name~=|sha256:a.c$|'));
    assert.ok(match('  kind == committed , name  '));
    assert.ok(!match('labels.missing'));
    assert.ok(match('labels.missing!=x'), '!= matches an absent field, as containerd');
    assert.ok(!match('kind==active'));
    assert.ok(match('kind==active|kind==committed'));
    assert.ok(match('kind==active', 'kind==committed'));
    assert.ok(!match('kind==active,name~=default|kind==view'));
  });

  test('syntax errors are InvalidArgument with the position', () => {
    for (const bad of ['name==', '==x', 'name=x', 'name==a,', 'name=="open', 'a.', 'name~=[', 'kind==a b']) {
      assert.throws(() => match(bad), (e: unknown) => e instanceof SnapshotError && e.kind === 'InvalidArgument' && /parse error/.test(e.message), bad);
    }
  });
});
