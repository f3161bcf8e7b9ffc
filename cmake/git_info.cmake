# Run at every build: writes the build provenance header, touching it only when it changes.
# Inputs: SRC_DIR, OUT, VERSION, BUILD_TYPE.
execute_process(COMMAND git rev-parse --short=12 HEAD WORKING_DIRECTORY ${SRC_DIR}
  OUTPUT_VARIABLE EISIM_GIT_COMMIT OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT EISIM_GIT_COMMIT)
  set(EISIM_GIT_COMMIT "unknown")
else()
  execute_process(COMMAND git status --porcelain --untracked-files=no WORKING_DIRECTORY ${SRC_DIR}
    OUTPUT_VARIABLE dirty OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(dirty)
    set(EISIM_GIT_COMMIT "${EISIM_GIT_COMMIT}-dirty")
  endif()
endif()
set(PROJECT_VERSION ${VERSION})
set(CMAKE_BUILD_TYPE ${BUILD_TYPE})
configure_file(${SRC_DIR}/cmake/build_info.hpp.in ${OUT} @ONLY)
