// Test runner: prints the random seed used by randomised tests (override with EISIM_TEST_SEED).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "test_support.hpp"

int main(int argc, char** argv) {
  std::fprintf(stderr, "eisim tests: random seed %llu (set EISIM_TEST_SEED to change)\n",
               static_cast<unsigned long long>(eisim::test::seed()));
  doctest::Context context(argc, argv);
  return context.run();
}
