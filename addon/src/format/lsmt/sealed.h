// A sealed (read-only) LSMT layer, as stored in a registry blob (docs/formats.md, LSMT).
#pragma once

#include <memory>

#include "format/lsmt/header.h"
#include "format/lsmt/index.h"
#include "io/file.h"

namespace obd::lsmt {

class SealedLayer {
 public:
  // Validates header, trailer and every index entry. Errors name the file.
  // With a target it is a warp layer (TurboOCI meta): entries of the second tag map to sectors of
  // the target and carry kTargetBit in their moffset.
  static Result<std::shared_ptr<SealedLayer>> open(std::shared_ptr<ReadableFile> file,
                                                   std::shared_ptr<ReadableFile> target = nullptr);

  const HeaderTrailer& header() const { return header_; }
  const HeaderTrailer& trailer() const { return trailer_; }
  const SegmentIndex& index() const { return index_; }
  // Frees the index once a stack has merged it (the merged copy is what reads use).
  void dropIndex() { index_ = SegmentIndex(); }
  ReadableFile& file() const { return *file_; }
  const std::shared_ptr<ReadableFile>& fileRef() const { return file_; }
  const std::shared_ptr<ReadableFile>& target() const { return target_; }

 private:
  SealedLayer() = default;
  std::shared_ptr<ReadableFile> file_;
  std::shared_ptr<ReadableFile> target_;
  HeaderTrailer header_, trailer_;
  SegmentIndex index_;
};

// True when the first bytes look like any LSMT file (magic only).
bool looksLikeLsmt(const void* first, size_t n);

}  // namespace obd::lsmt
