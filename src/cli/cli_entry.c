/* The bnspike executable's entry point (the command line is bnspike_main). */
#include "cli.h"

int main(int argc, char **argv) { return bnspike_main(argc, argv); }
