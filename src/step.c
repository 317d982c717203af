/* The step schedule (which steps are recorded) and the generic step loop that
 * any backend without a fused run_steps uses. */
#include "backend.h"

int64_t bn_record_count(int64_t steps, int64_t every)
{
    return steps / every + 1 + (steps % every != 0);
}

int64_t bn_record_slot(int64_t t, int64_t steps, int64_t every)
{
    if (t % every == 0) return t / every;
    if (t == steps) return steps / every + 1;
    return -1;
}

/* Step t evaluates the state (w_t, γ_t), records it when scheduled, and moves
 * to t+1 unless t is the last step T. */
bn_status bn_run_steps_generic(bn_backend *be, const bn_step_plan *p, int64_t t0, int64_t t1,
                               int64_t slot0)
{
    const bn_backend_ops *ops = be->ops;
    size_t block = bn_mul_size((size_t)BN_ST_COUNT * (size_t)p->S, bn_real_size(be->precision));
    for (int64_t t = t0; t < t1; t++) {
        int64_t slot = bn_record_slot(t, p->steps, p->every);
        void *stats = slot < 0 ? p->stats_scratch : (char *)p->stats_ring + (size_t)(slot - slot0) * block;
        BN_TRY(ops->product_xw(be, p->n, p->d, p->S, p->Xc, p->W, p->U));
        BN_TRY(ops->forward_columns(be, p->n, p->S, p->U, p->y, p->uhat, p->gamma, p->logistic,
                                    p->Q, stats));
        BN_TRY(ops->product_xtq(be, p->n, p->d, p->S, p->Xc, p->Q, p->G));
        BN_TRY(ops->update_columns(be, p->d, p->S, p->W, p->G, p->ehat, p->eta_w, p->eta_gamma,
                                   p->gamma, t < p->steps, stats, t, p->diverged_step));
    }
    return BN_OK;
}
