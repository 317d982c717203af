/* `bnspike data`: writes a generated data set (bn_dataset_generate) as a CSV
 * that `bnspike run --csv` reads back bit for bit (%.17g): header x0..x{d-1},y. */
#include "common.h"

#include <stdlib.h>
#include <string.h>

static const char data_help[] =
    "usage: bnspike data NAME[:k=v,...] [--loss square|logistic] --out FILE.csv\n"
    "\n"
    "Writes the data set that `--data NAME[:k=v,...]` generates as a CSV file: a\n"
    "header line x0,...,x{d-1},y and one line per sample with every value at full\n"
    "precision, so `bnspike run --csv FILE.csv` sees exactly the same numbers.\n"
    "The loss picks regression targets (square) or ±1 labels (logistic).\n"
    "  --loss square|logistic   (square)\n"
    "  --out FILE.csv           output file (required)\n"
    "  -h, --help               this text\n";

int cmd_data(int argc, char **argv)
{
    const char *spec = NULL, *out = NULL;
    bn_loss loss = BN_LOSS_SQUARE;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(data_help, stdout);
            return 0;
        } else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            out = argv[++i];
        } else if (strcmp(argv[i], "--loss") == 0 && i + 1 < argc) {
            if (bn_parse_loss(argv[++i], &loss)) return cli_usage_error("data", "--loss: %s", bn_last_error());
        } else if (argv[i][0] == '-') {
            return cli_usage_error("data", "unknown or incomplete option '%s'", argv[i]);
        } else if (!spec) {
            spec = argv[i];
        } else {
            return cli_usage_error("data", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!spec) return cli_usage_error("data", "no generator spec given (e.g. whitened:n=400,d=20)");
    if (!out) return cli_usage_error("data", "--out FILE.csv is required");
    if (cli_parse_only) return 0;
    bn_dataset *ds;
    bn_status st = bn_dataset_generate(spec, loss, &ds);
    if (st) return cli_report("data", st);
    int64_t n = bn_dataset_n(ds), d = bn_dataset_d(ds);
    const double *X = bn_dataset_X(ds), *y = bn_dataset_y(ds);
    cli_text t = {0};
    for (int64_t k = 0; k < d; k++) cli_text_printf(&t, "x%lld,", (long long)k);
    cli_text_printf(&t, "y\n");
    for (int64_t i = 0; i < n; i++) {
        for (int64_t k = 0; k < d; k++) cli_text_printf(&t, "%.17g,", X[i * d + k]);
        cli_text_printf(&t, "%.17g\n", y[i]);
    }
    st = t.failed ? BN_ERR_NOMEM : bn_write_file_atomic(out, t.buf, t.len);
    cli_text_free(&t);
    int rc = st ? cli_report(out, st) : 0;
    if (!rc) printf("wrote %s: %s, n=%lld, d=%lld\n", out, bn_dataset_name(ds), (long long)n, (long long)d);
    bn_dataset_free(ds);
    return rc;
}
