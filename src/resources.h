/* Up-front resource checks (resources.c). */
#ifndef BN_RESOURCES_H
#define BN_RESOURCES_H

#include "internal.h"

/* BN_ERR_NOMEM with "<what> needs about X of host memory; Y available (...)"
 * when `bytes` exceed what this process can still get. */
bn_status bn_check_host_memory(double bytes, const char *what);

#endif
