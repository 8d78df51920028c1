# EMBER_WERROR=ON turns compiler warnings into errors for ember's own code: the library, the
# tests, the examples and the benches. Everything built in this tree is ember's (dependencies
# come from the system and their headers are included as system headers, whose warnings the
# compiler does not report), so a directory-wide option reaches exactly ember's targets; it is
# included before any target is defined. The install consumer test configures a project of its
# own and is not affected.
#
# CUDA: -Werror reaches the host compiler of the .cu files too (-Xcompiler=-Werror). nvcc's own
# device-side diagnostics stay warnings: they come from code paths that the host compiler
# never sees and are reported per architecture, so a new EMBER_CUDA_ARCHS could break a build
# that was clean.
option(EMBER_WERROR "Treat compiler warnings as errors in ember's own targets" OFF)
if(EMBER_WERROR)
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-Werror> $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Werror>)
  message(STATUS "ember: warnings are errors (EMBER_WERROR=ON)")
endif()
