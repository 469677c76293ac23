#include "charlm/loss.h"

#include <math.h>
#include <string.h>

double loss_softmax_xent(float *logits, const int32_t *targets, int64_t N, int V, float scale,
                         int grad) {
    double total = 0.0;
    for (int64_t i = 0; i < N; i++) {
        float *row = logits + i * V;
        int y = targets[i];
        if (y < 0) {
            if (grad) memset(row, 0, sizeof(float) * (size_t)V);
            continue;
        }
        float mx = row[0];
        for (int j = 1; j < V; j++) mx = row[j] > mx ? row[j] : mx;
        double zy = (double)(row[y] - mx);
        float sum = 0.0f;
        for (int j = 0; j < V; j++) {
            float e = expf(row[j] - mx);
            if (grad) row[j] = e;
            sum += e;
        }
        /* log-sum-exp form: exact even when p[y] underflows to zero */
        total += log((double)sum) - zy;
        if (grad) {
            float inv = scale / sum;
            for (int j = 0; j < V; j++) row[j] *= inv;
            row[y] -= scale;
        }
    }
    return total;
}
