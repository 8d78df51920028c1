# Dependencies come from the system (Debian packages). A missing required one fails with the
# package to install; a missing optional one turns its feature off with one line.
find_package(Eigen3 3.3 QUIET NO_MODULE)
if(NOT TARGET Eigen3::Eigen)
  message(FATAL_ERROR "ember: Eigen3 not found. Install it: apt-get install libeigen3-dev "
                      "(or run scripts/setup.sh)")
endif()
find_package(OpenMP REQUIRED)
find_package(ZLIB QUIET)
if(NOT TARGET ZLIB::ZLIB)
  message(FATAL_ERROR "ember: zlib not found. Install it: apt-get install zlib1g-dev (or run scripts/setup.sh)")
endif()
# MPI (OpenMPI from Debian) carries ember::dist across processes; without it a job is one process.
find_package(MPI QUIET COMPONENTS CXX)
if(TARGET MPI::MPI_CXX)
  set(EMBER_WITH_MPI ON)
  message(STATUS "ember: MPI ${MPI_CXX_VERSION} found: dist collectives across processes")
else()
  set(EMBER_WITH_MPI OFF)
  message(STATUS "ember: MPI not found: dist runs one process (apt-get install libopenmpi-dev openmpi-bin)")
endif()
find_package(nlohmann_json 3 QUIET)
if(NOT TARGET nlohmann_json::nlohmann_json)
  message(FATAL_ERROR "ember: nlohmann-json not found. Install it: apt-get install nlohmann-json3-dev "
                      "(or run scripts/setup.sh)")
endif()

if(EMBER_BUILD_TESTS)
  find_package(doctest QUIET)
  if(NOT TARGET doctest::doctest)
    message(FATAL_ERROR "ember: doctest not found. Install it: apt-get install doctest-dev "
                        "(or configure with -DEMBER_BUILD_TESTS=OFF)")
  endif()
endif()

if(EMBER_BUILD_BENCH)
  find_package(benchmark QUIET)
  if(NOT TARGET benchmark::benchmark)
    message(STATUS "ember: Google Benchmark not found (apt-get install libbenchmark-dev); "
                   "kernel benchmarks off")
  endif()
endif()
