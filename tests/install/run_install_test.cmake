# Driver for the install_consumer test (see install_test.cmake). Run with `cmake -P`; every step
# that fails stops the script with FATAL_ERROR, so the test fails.
foreach(v EMBER_BUILD_DIR CONSUMER_SOURCE_DIR WORK_DIR CONSUMER_CXX_COMPILER)
  if(NOT DEFINED ${v} OR "${${v}}" STREQUAL "")
    message(FATAL_ERROR "run_install_test.cmake: -D${v}=... is required")
  endif()
endforeach()
if(NOT CONFIG)
  set(CONFIG Release)
endif()

set(prefix "${WORK_DIR}/prefix")
set(build "${WORK_DIR}/consumer-build")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

function(step name)
  message(STATUS "install test: ${name}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message("${out}")
    message(FATAL_ERROR "install test: '${name}' failed (${rc})")
  endif()
endfunction()

step("install into ${prefix}"
  ${CMAKE_COMMAND} --install "${EMBER_BUILD_DIR}" --prefix "${prefix}" --config "${CONFIG}")

set(configure_args -S "${CONSUMER_SOURCE_DIR}" -B "${build}"
  "-DCMAKE_PREFIX_PATH=${prefix}" "-DCMAKE_BUILD_TYPE=${CONFIG}"
  "-DCMAKE_CXX_COMPILER=${CONSUMER_CXX_COMPILER}"
  # Only the installed copy may be found: no package registries.
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
if(CONSUMER_GENERATOR)
  list(APPEND configure_args -G "${CONSUMER_GENERATOR}")
endif()
if(CONSUMER_LAUNCHER)
  list(APPEND configure_args "-DCMAKE_CXX_COMPILER_LAUNCHER=${CONSUMER_LAUNCHER}")
endif()
step("configure the consumer" ${CMAKE_COMMAND} ${configure_args})
step("build the consumer" ${CMAKE_COMMAND} --build "${build}" --config "${CONFIG}")

# Where the consumer's binary landed: single-config generators put it in the build dir.
set(exe "${build}/ember_consumer")
if(NOT EXISTS "${exe}")
  set(exe "${build}/${CONFIG}/ember_consumer")
endif()
execute_process(COMMAND "${exe}" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
message("${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "install test: the consumer failed (${rc})")
endif()
message(STATUS "install test: passed")
