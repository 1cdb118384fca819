// TurboOCI meta layers give each file data blocks without writing them: the applier preallocates
// (fallocate, which ext4 records as *unwritten* extents, read back as zeros) and the commit maps
// those blocks to the tar stream. Before the commit, the unwritten flag of those files' extents is
// cleared on the unmounted device, so ext4 reads the mapped bytes. Needs an ext4 without
// metadata_csum (obdconv's mkfs), as extent blocks and inodes then carry no checksum to update.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "util/status.h"

namespace obd::convert {

// Clears the unwritten bit of every leaf extent of the given inodes on the ext4 `device` (not
// mounted). Returns the number of extents changed; a malformed superblock, inode or extent tree is
// an error naming the inode.
Result<uint64_t> markExtentsWritten(const std::string& device, const std::vector<uint64_t>& inodes);

}  // namespace obd::convert
