# ONNX export (include/ember/io/onnx.h, src/onnx/): its own library, ember::onnx, built when
# CMake finds the ONNX protobuf classes (Debian: libonnx-dev) and Protobuf (libprotobuf-dev),
# so the core library never depends on protobuf. EMBER_WITH_ONNX tells tests and examples.
# EMBER_ONNX=OFF skips it (the asan preset does: the exporter's checks run in the release build,
# and the sanitizer build is the CI's longest step).
option(EMBER_ONNX "Build the ONNX exporter ember::onnx when libonnx-dev and libprotobuf-dev are found" ON)
set(EMBER_WITH_ONNX OFF)
if(EMBER_ONNX)
  find_package(Protobuf QUIET)
  find_package(ONNX CONFIG QUIET)
endif()
if(EMBER_ONNX AND ONNX_FOUND AND Protobuf_FOUND AND TARGET onnx_proto)
  add_library(ember_onnx ${PROJECT_SOURCE_DIR}/src/onnx/export.cpp)
  add_library(ember::onnx ALIAS ember_onnx)
  target_link_libraries(ember_onnx PUBLIC ember PRIVATE onnx_proto protobuf::libprotobuf)
  target_include_directories(ember_onnx PRIVATE ${PROJECT_SOURCE_DIR}/src)  # core/atomic_file.h
  target_compile_options(ember_onnx PRIVATE -Wall -Wextra)
  set_target_properties(ember_onnx PROPERTIES POSITION_INDEPENDENT_CODE ON)
  set(EMBER_WITH_ONNX ON)
  find_package(Python3 COMPONENTS Interpreter QUIET)  # the onnxruntime checks (tests/onnx/check_onnx.py)
  message(STATUS "ember: ONNX export (ember::onnx) is built (ONNX ${ONNX_VERSION}, Protobuf ${Protobuf_VERSION})")
elseif(NOT EMBER_ONNX)
  message(STATUS "ember: ONNX export (ember::onnx) is off (EMBER_ONNX=OFF)")
else()
  message(STATUS "ember: ONNX export (ember::onnx) is NOT built: install libonnx-dev and libprotobuf-dev")
endif()

# ember_example_onnx(<target>): the example's --export-onnx FILE (examples/common/onnx_export.h)
# works when ember::onnx is built; otherwise the flag reports that it is missing.
function(ember_example_onnx target)
  if(EMBER_WITH_ONNX)
    target_link_libraries(${target} PRIVATE ember::onnx)
    target_compile_definitions(${target} PRIVATE EMBER_WITH_ONNX=1)
  endif()
endfunction()

# ember_example_onnx_test(<name> <target> ARGS...): example_<name>_onnx runs `<target> ARGS
# --export-onnx <name>.onnx` (a tiny training run that exports its model and sample), then
# example_<name>_onnx_check runs tests/onnx/check_onnx.py on it (skipped without onnx and
# onnxruntime in python3).
function(ember_example_onnx_test name target)
  if(NOT EMBER_WITH_ONNX OR NOT EMBER_BUILD_TESTS)
    return()
  endif()
  set(_file ${CMAKE_CURRENT_BINARY_DIR}/${name}.onnx)
  add_test(NAME example_${name}_onnx COMMAND ${target} ${ARGN} --export-onnx ${_file})
  set_tests_properties(example_${name}_onnx PROPERTIES FIXTURES_SETUP example_${name}_onnx
                       PASS_REGULAR_EXPRESSION "exported ONNX model" FAIL_REGULAR_EXPRESSION "error:"
                       TIMEOUT 120 LABELS "example;onnx")
  if(Python3_Interpreter_FOUND)
    add_test(NAME example_${name}_onnx_check
             COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/tests/onnx/check_onnx.py ${_file}
                     ${CMAKE_CURRENT_BINARY_DIR}/${name}.sample.safetensors)
    set_tests_properties(example_${name}_onnx_check PROPERTIES FIXTURES_REQUIRED example_${name}_onnx
                         SKIP_RETURN_CODE 77 TIMEOUT 60 LABELS "example;onnx")
  endif()
endfunction()

# Installed as its own package: find_package(ember_onnx) gives ember::onnx (and finds ember,
# Protobuf and ONNX, which a static ember_onnx needs at link time).
if(EMBER_WITH_ONNX)
  include(GNUInstallDirs)
  set_target_properties(ember_onnx PROPERTIES EXPORT_NAME onnx)
  install(TARGETS ember_onnx EXPORT emberOnnxTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  install(EXPORT emberOnnxTargets NAMESPACE ember:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ember_onnx)
  file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/ember_onnxConfig.cmake
       "include(CMakeFindDependencyMacro)\n"
       "find_dependency(ember)\n"
       "find_dependency(Protobuf)\n"
       "find_dependency(ONNX CONFIG)\n"
       "if(NOT TARGET ember::onnx)\n"
       "  include(\"\${CMAKE_CURRENT_LIST_DIR}/emberOnnxTargets.cmake\")\n"
       "endif()\n")
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/ember_onnxConfig.cmake DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ember_onnx)
endif()
