// Test fixtures that own child processes (registry, containerd, snapshotter, deviced) are tracked
// here while they run; whatever a test did, they are killed when the test process exits.
export function killedAtExit<T extends { killNow(): void }>(): Set<T> {
  const live = new Set<T>();
  process.once('exit', () => {
    for (const x of live) x.killNow();
  });
  return live;
}
