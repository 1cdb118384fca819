// Tar-wrapped layer blobs (docs/formats.md): `overlaybd-commit -t` / ACI store a layer as a POSIX ustar
// archive with one member so that plain OCI tools accept it. The payload is that member's bytes.
#pragma once

#include <memory>
#include <optional>

#include "io/file.h"

namespace obd::tar {

struct Member {
  uint64_t offset;  // payload start in the archive
  uint64_t size;    // payload bytes
};

// Looks at the first header: nullopt when it is not a POSIX ustar header with a valid checksum
// (the blob is then used as is); an error when it is one but the member is malformed/truncated.
Result<std::optional<Member>> detect(ReadableFile& file);

// A window [offset, offset+size) of another file.
class MemberFile : public ReadableFile {
 public:
  MemberFile(std::shared_ptr<ReadableFile> archive, Member m)
      : archive_(std::move(archive)), member_(m), name_(archive_->name()) {}
  uint64_t size() const override { return member_.size; }
  const std::string& name() const override { return name_; }
  void readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) override;

 private:
  std::shared_ptr<ReadableFile> archive_;
  Member member_;
  std::string name_;
};

}  // namespace obd::tar
