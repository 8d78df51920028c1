// The distributed suite's main: joins the job, runs the cases on every rank, leaves the job.
// The exit code is non-zero on a rank whose cases failed (mpirun then reports the job failed).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "ember/dist.h"

int main(int argc, char** argv) {
  ember::dist::init({.timeout = 60.0});
  doctest::Context ctx(argc, argv);
  const int rc = ctx.run();
  ember::dist::barrier();
  ember::dist::finalize();
  return rc;
}
