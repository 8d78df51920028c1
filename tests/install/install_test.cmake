# The install test: `cmake --install` this build into a fresh prefix, then configure, build and
# run tests/install/consumer (find_package(ember) + ember::ember) against that prefix only.
# Included from tests/CMakeLists.txt:
#   include(${PROJECT_SOURCE_DIR}/tests/install/install_test.cmake)
# The steps run in run_install_test.cmake (a `cmake -P` script) so any failing step fails the test.
set(_ember_install_args
  -DEMBER_BUILD_DIR=${PROJECT_BINARY_DIR}
  -DCONSUMER_SOURCE_DIR=${CMAKE_CURRENT_LIST_DIR}/consumer
  -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/install_test
  -DCONSUMER_CXX_COMPILER=${CMAKE_CXX_COMPILER}
  -DCONSUMER_LAUNCHER=${CMAKE_CXX_COMPILER_LAUNCHER}
  -DCONSUMER_GENERATOR=${CMAKE_GENERATOR})
add_test(NAME install_consumer
  COMMAND ${CMAKE_COMMAND} ${_ember_install_args} -DCONFIG=$<CONFIG>
          -P ${CMAKE_CURRENT_LIST_DIR}/run_install_test.cmake)
set_tests_properties(install_consumer PROPERTIES TIMEOUT 600 LABELS install)
unset(_ember_install_args)
