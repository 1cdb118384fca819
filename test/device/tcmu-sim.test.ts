// The TCMU handler (ring processor + SCSI command set) driven through a simulated kernel side:
// mailbox, command ring and data area in a memfd laid out as target_core_user.h defines them, eventfds
// for the uio notifications, real CDBs; and the configfs/UIO/tcm_loop sequences against a model of
// configfs. Each case is one run of the C++ program (addon/test/tcmu).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { tcmuProgram } from './tcmu-support';

// What each simulator case specifies, in words (the program prints "ok <case>" / "not ok <case>: why").
const CASES: Record<string, string> = {
  inquiry_standard_and_vpd: 'INQUIRY answers the standard page and VPD 00/80/83/B0/B1/B2, honours allocation length, rejects unknown pages',
  test_unit_ready_and_bad_opcodes: 'TEST UNIT READY is GOOD; unknown, vendor and variable-length opcodes get ILLEGAL REQUEST 20/00',
  read_capacity_10_16: 'READ CAPACITY(10) and (16) report the last LBA, 512-byte blocks and LBPME|LBPRZ',
  mode_sense_and_select: 'MODE SENSE(6/10) returns pages 01/08/0A with the WP bit on read-only disks; MODE SELECT accepts only current values',
  read_write_round_trip: 'READ/WRITE 6/10/12/16 round-trip against an in-memory reference disk',
  lba_out_of_range: 'reads and writes past the end (or with LBA overflow) get ILLEGAL REQUEST 21/00 and change nothing',
  write_protect: 'WRITE, WRITE SAME and UNMAP on a read-only disk get DATA PROTECT 27/00; reads still work',
  medium_errors: 'a failing read gets MEDIUM ERROR 11/00, a failing write or flush MEDIUM ERROR 0C/00',
  ring_wrap_around_with_pad: 'a small ring wraps many times with PAD entries and every command still completes correctly',
  many_in_flight_out_of_order: 'many commands in flight complete out of order on other threads with correct data',
  tail_waits_for_oldest_command: 'cmd_tail never passes a command that has not completed; completions reach the kernel in ring order',
  data_spanning_iovecs: 'data spanning several iovecs (aligned, unaligned, scattered) is read and written correctly',
  unmap_and_write_same: 'UNMAP and WRITE SAME(16) with UNMAP discard; WRITE SAME(10) writes the pattern; bad lists are refused',
  malformed_entries: 'ring entries with iovecs or CDBs outside the mapping get HARDWARE ERROR 44/00, never a crash',
  fuzzed_entries_always_answered: 'thousands of CMD entries with random iovecs, CDB offsets and CDBs are each answered, never crash the handler',
  broken_ring_stops_safely: 'an unwalkable ring (zero-length entry, bad cmd_head, bad mailbox) is reported, not crashed on',
  notifications_are_batched: 'one uio write covers a batch of completions',
  slow_flush_does_not_stop_reads: 'a slow flush runs off the fetch thread: later reads reach the device meanwhile, completions stay in ring order',
  aci_loopback_names: "tcm_loop targets are named as accelerated-container-image names them: naa.199 + 13 digits, naa.1NN with a tenant HBA",
  configfs_create_and_teardown:
    'on a configfs model: backstore, enable, tcm_loop LUN and /dev/sdX are made in order and removed LUN-first',
  configfs_failures_leave_nothing:
    'a failed enable, a disk that never appears, bad names and a kernel without target_core_user leave nothing behind and say why',
  configfs_adopt_after_restart:
    'a device left by a previous process is adopted (same /dev/sdX) instead of re-created, or found and removed when stale',
  served_device_over_configfs:
    "deviced's seam (serveBlockDevice, transport tcmu) serves the backstore as a ServedDevice; release leaves it to adopt, close removes it",
};

test('TCMU handler against the ring simulator', async (t) => {
  const program = tcmuProgram();
  const list = spawnSync(program, ['--list'], { encoding: 'utf8' });
  assert.equal(list.status, 0, list.stderr);
  const cases = list.stdout.split('\n').filter(Boolean);
  assert.deepEqual([...cases].sort(), Object.keys(CASES).sort(), 'every simulator case is listed here with its meaning');
  for (const name of cases) {
    await t.test(CASES[name] ?? name, () => {
      const r = spawnSync(program, [name], { encoding: 'utf8', timeout: 120_000 });
      const out = `${r.stdout}${r.stderr}`.trim();
      assert.equal(r.signal, null, `${name} was killed by ${r.signal}: ${out}`);
      assert.equal(r.status, 0, out);
      assert.match(r.stdout, new RegExp(`^ok ${name}$`, 'm'));
    });
  }
});
