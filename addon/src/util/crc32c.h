// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) as a *raw register update*: the register
// starts at `seed`, and there is no initial or final inversion. This is what chaining the SSE4.2
// `crc32` instruction computes, and what overlaybd's ZFile checksums are (docs/formats.md, ZFile). The standard
// CRC-32C of data D is ~crc32cUpdate(~0u, D).
#pragma once

#include <cstddef>
#include <cstdint>

namespace obd {

uint32_t crc32cUpdate(uint32_t seed, const void* data, size_t n);

// Exposed for tests: the portable path, whatever the CPU supports.
uint32_t crc32cUpdateTable(uint32_t seed, const void* data, size_t n);
// True when crc32cUpdate uses the CPU instruction.
bool crc32cHardware();

}  // namespace obd
