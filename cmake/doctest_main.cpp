// doctest's main() for every C++ unit-test executable (cmake/CppTests.cmake).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
