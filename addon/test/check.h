// CHECK(cond, printf-format, ...) for the C++ test programs: prints "FAIL file:line: message" and
// counts the failure in check_failures; the program exits non-zero when any check failed.
#pragma once

#include <cstdio>

inline int check_failures = 0;

#define CHECK(cond, ...)                               \
  do {                                                 \
    if (!(cond)) {                                     \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
      std::printf(__VA_ARGS__);                        \
      std::printf("\n");                               \
      ++check_failures;                                \
    }                                                  \
  } while (0)
