// The doctest main of ember_kernel_emu_tests (the emulated tensor-core kernels).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
