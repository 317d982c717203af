/* Host memory checks made before large allocations: a run that cannot fit is
 * refused with the numbers, instead of being killed by the OOM killer or
 * failing half way.  "Available" is the smallest of the kernel's MemAvailable
 * and what the address-space and data limits (ulimit -v, -d) still allow. */
#include "internal.h"
#include "resources.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static double mem_available_kernel(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    double kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024.0;
}

static double vm_size_now(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    double pages = 0;
    if (fscanf(f, "%lf", &pages) != 1) pages = 0;
    fclose(f);
    return pages * (double)sysconf(_SC_PAGESIZE);
}

void bn_format_bytes(double b, char *buf, size_t cap)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int k = 0;
    while (b >= 1024 && k < 4) {
        b /= 1024;
        k++;
    }
    snprintf(buf, cap, "%.1f %s", b, u[k]);
}

bn_status bn_check_host_memory(double bytes, const char *what)
{
    double avail = mem_available_kernel();
    const char *limit = "MemAvailable";
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        double left = (double)rl.rlim_cur - vm_size_now();
        if (avail < 0 || left < avail) {
            avail = left;
            limit = "the address-space limit (ulimit -v)";
        }
    }
    if (getrlimit(RLIMIT_DATA, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        double left = (double)rl.rlim_cur - vm_size_now();
        if (avail < 0 || left < avail) {
            avail = left;
            limit = "the data-segment limit (ulimit -d)";
        }
    }
    if (avail < 0 || bytes <= avail) return BN_OK;
    char need[32], have[32];
    bn_format_bytes(bytes, need, sizeof need);
    bn_format_bytes(avail > 0 ? avail : 0, have, sizeof have);
    return bn_fail(BN_ERR_NOMEM, "%s needs about %s of host memory; %s available (%s)", what, need, have, limit);
}
