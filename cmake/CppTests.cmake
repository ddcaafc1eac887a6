# C++ unit tests: doctest (header-only; Debian/Ubuntu package doctest-dev), one executable per test file,
# each registered with ctest. tests/test_cpp_unit.py runs ctest from the pytest suite (the README's test command).
#
# Off by default, so `pip install .` builds the library without doctest; tools/setup.sh (the development and CI
# build) turns it on and installs doctest-dev when it can. When the option is on and doctest is missing, the
# configure step fails with instructions instead of silently building no tests.
#
# Adding tests: drop a file into <component>/tests/ (e.g. csrc/robot_rt/control/tests/test_foo.cpp, written
# against doctest, no main()) and re-run tools/setup.sh; a component opts in with one line in its CMakeLists.txt:
#   pr_add_cpp_tests(<library the tests link against> ...)
# Each file becomes the ctest test named after its path under csrc/ without the extension
# (robot_rt/control/tests/test_safety).
option(PR_BUILD_TESTS "Build the C++ unit tests (needs doctest: apt-get install doctest-dev)" OFF)

if(PR_BUILD_TESTS)
  enable_testing()
  find_package(doctest CONFIG QUIET)
  if(TARGET doctest::doctest)
    set(PR_DOCTEST_TARGET doctest::doctest)
  else()
    # Header-only copy anywhere (DOCTEST_INCLUDE_DIR=<dir holding doctest/doctest.h>, or a standard prefix).
    find_path(PR_DOCTEST_INCLUDE_DIR doctest/doctest.h HINTS ${DOCTEST_INCLUDE_DIR} ENV DOCTEST_INCLUDE_DIR)
    if(NOT PR_DOCTEST_INCLUDE_DIR)
      message(FATAL_ERROR
        "PR_BUILD_TESTS is ON but doctest (the C++ unit-test framework) was not found.\n"
        "  Install it:   apt-get install doctest-dev   (Debian/Ubuntu; tools/setup.sh does this when run as root)\n"
        "  or point to a header-only copy:   DOCTEST_INCLUDE_DIR=<dir containing doctest/doctest.h>\n"
        "  or build the library without the C++ tests:   PR_BUILD_TESTS=OFF bash tools/setup.sh\n"
        "  (tests/test_cpp_unit.py then fails: CI must run the C++ tests).")
    endif()
    add_library(pr_doctest INTERFACE)
    target_include_directories(pr_doctest INTERFACE ${PR_DOCTEST_INCLUDE_DIR})
    set(PR_DOCTEST_TARGET pr_doctest)
  endif()
  message(STATUS "percept_robot: C++ unit tests ON (doctest: ${PR_DOCTEST_TARGET})")
  # doctest's main(), compiled once for all test executables.
  add_library(pr_doctest_main STATIC ${CMAKE_CURRENT_LIST_DIR}/doctest_main.cpp)
  target_link_libraries(pr_doctest_main PUBLIC ${PR_DOCTEST_TARGET})
else()
  message(STATUS "percept_robot: C++ unit tests OFF (PR_BUILD_TESTS)")
endif()

# One test executable per <current source dir>/tests/*.cpp, linked against the given libraries.
function(pr_add_cpp_tests)
  if(NOT PR_BUILD_TESTS)
    return()
  endif()
  file(GLOB test_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/tests/*.cpp)
  file(RELATIVE_PATH component ${PROJECT_SOURCE_DIR}/csrc ${CMAKE_CURRENT_SOURCE_DIR})
  foreach(src ${test_sources})
    get_filename_component(stem ${src} NAME_WE)
    string(REPLACE "/" "_" target "cpptest_${component}_${stem}")
    add_executable(${target} ${src})
    # Same code generation as the libraries under test (the safety filter's invariance argument relies on
    # identical floating-point operations in the filter and in its can_stop() simulation).
    target_compile_options(${target} PRIVATE ${PR_CXX_FLAGS} -Wall -Wextra)
    target_link_libraries(${target} PRIVATE pr_doctest_main ${ARGN})
    add_test(NAME ${component}/tests/${stem} COMMAND ${target})
    set_tests_properties(${component}/tests/${stem} PROPERTIES TIMEOUT 120 LABELS "cpp;${component}")
  endforeach()
endfunction()
