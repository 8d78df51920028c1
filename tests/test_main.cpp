// The one doctest main of the suite. Everything else is in test_*.cpp and op_harness.cpp.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
