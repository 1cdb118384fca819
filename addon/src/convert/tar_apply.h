// Applies one OCI layer tar (plain, gzip or zstd — libarchive detects the filter) onto a mounted
// filesystem with OCI semantics: `.wh.NAME` whiteouts and `.wh..wh..opq` opaque directories only
// hide what lower layers put there, a non-directory replaces a directory, hardlinks, symlinks,
// device nodes, fifos, numeric ownership, modes, mtimes, pax xattrs and sparse files.
//
// Safety: every entry name (and hardlink target) is checked before anything is written: absolute
// paths, `..` components, over-long names, absurd sizes and entry counts are refused with an error
// naming the entry; writing through a symlink is refused (libarchive SECURE_SYMLINKS, and our own
// check for whiteouts); and the extraction runs chroot'ed into the target root, so even a bug here
// cannot write outside the layer filesystem. Meant for a dedicated child process (chroot, umask).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "util/status.h"

namespace obd::convert {

struct ApplyLimits {
  uint64_t maxEntries = 10'000'000;
  uint64_t maxEntrySize = 1ull << 40;   // one file's size (apparent)
  uint64_t maxTotalBytes = 1ull << 42;  // sum of file sizes
  size_t maxPathBytes = 4095;           // PATH_MAX - 1
  size_t maxNameBytes = 255;            // one component
};

struct ApplyStats {
  uint64_t entries = 0;
  uint64_t files = 0;
  uint64_t dirs = 0;
  uint64_t symlinks = 0;
  uint64_t hardlinks = 0;
  uint64_t specials = 0;   // device nodes and fifos
  uint64_t whiteouts = 0;
  uint64_t opaques = 0;
  uint64_t removed = 0;    // filesystem objects deleted by whiteouts/opaque dirs/replacement
  uint64_t bytes = 0;      // file data written
  uint64_t preallocatedBytes = 0; // TurboOCI: file data given blocks but not written (mapped to the tar)
  uint64_t inputBytes = 0; // bytes read from the (possibly compressed) input
  uint64_t warnings = 0;
  std::string firstWarning;
};

// Where a regular file's data sits on the block device and in the layer's uncompressed tar stream
// (TurboOCI meta layers map these device bytes to the tar instead of storing them).
struct TarDataRun {
  uint64_t deviceOffset;  // bytes, 4096-aligned
  uint64_t length;        // bytes, multiple of 512
  uint64_t tarOffset;     // bytes, 512-aligned
};

// TurboOCI apply output: the data runs, and the inodes whose extents were preallocated (unwritten)
// and must be marked written (markExtentsWritten) once the filesystem is unmounted.
struct TarMapping {
  std::vector<TarDataRun> runs;
  std::vector<uint64_t> preallocatedInodes;
};

// Reads the archive from `inputFd` (not closed) and applies it under `root`. With `useChroot`
// the process chroot()s into root for the extraction and returns to the original root afterwards.
// With `mapping` (TurboOCI), the data of regular files that can be mapped to the tar (not sparse,
// 512-aligned in the stream) is not written: their blocks are preallocated, and after the apply
// their extents (FIEMAP) are collected with their offsets in the uncompressed tar.
// `plainTar`: the input is an uncompressed tar (TurboOCI: the offsets must be those of this very
// stream), so no compression is looked for.
Status applyTar(int inputFd, const std::string& root, const ApplyLimits& limits, bool useChroot, ApplyStats* stats,
                TarMapping* mapping = nullptr, bool plainTar = false);

// Checks one tar entry name: empty result = acceptable; otherwise the reason. `cleaned` gets the
// normalised relative path ("" for the root itself).
std::string checkEntryName(const std::string& name, const ApplyLimits& limits, std::string* cleaned);

}  // namespace obd::convert
