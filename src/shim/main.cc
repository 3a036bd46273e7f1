// arch-runc: the OCI runtime binary containerd and Docker call instead of runc.
#include "shim.h"

int main(int argc, char** argv) {
  return arch::run_shim(argc, argv);
}
