/* dump_grads: a helper of test_torch_reference.py (not a test itself). Runs one training window
 * of a checkpoint's model on the start of a text and writes its loss and the gradient of every
 * parameter tensor to an HDF5 file, for comparison with PyTorch.
 *
 *   dump_grads CKPT TEXTFILE B T OUT.h5
 *
 * The window. TEXTFILE (UTF-8; every character must be in the checkpoint's vocabulary) is
 * encoded into ids; its first B*T+1 characters are used. Stream b (0 <= b < B) reads the ids
 * [b*T, b*T + T]: at step t its input is ids[b*T + t] and its target ids[b*T + t + 1], so
 * neighbouring streams share one id (the stream layout of corpus.h with L = T). The state of
 * every layer starts from zero, dropout is off, and the loss is the mean over the B*T
 * predictions: model_forward(grad = 1, scale = 1/(B*T)) then model_backward.
 *
 * OUT.h5 (plain, contiguous datasets):
 *   /loss           float64 scalar   mean loss over the B*T predictions (nats/char)
 *   /loss_sum       float64 scalar   summed loss
 *   /inputs         int32 (T, B)     input ids, time-major as in model.h
 *   /targets        int32 (T, B)     target ids
 *   /grad/NAME      float32          d loss / d NAME for every tensor of /model (PyTorch names,
 *                                    the shapes of the checkpoint)
 *   root attributes B, T (int64)
 * Exit status 0, or 1 with one message on stderr. */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "charlm/checkpoint.h"
#include "charlm/err.h"
#include "charlm/model.h"
#include "charlm/vocab.h"

static _Noreturn void die(const char *msg) {
    fprintf(stderr, "dump_grads: %s\n", msg);
    exit(1);
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = xcalloc(cap, 1);
    for (size_t k; (k = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += k;
        if (n == cap) {
            char *bigger = xcalloc(cap * 2, 1);
            memcpy(bigger, buf, n);
            free(buf);
            buf = bigger;
            cap *= 2;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static long parse_pos(const char *s, const char *what) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 1 || v > 1 << 20) {
        fprintf(stderr, "dump_grads: %s '%s': expected a positive integer\n", what, s);
        exit(1);
    }
    return v;
}

static void write_dset(hid_t loc, const char *name, hid_t mem_type, hid_t file_type, int ndim,
                       const hsize_t *dims, const void *data) {
    hid_t space = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t ds = space < 0 ? -1
                         : H5Dcreate2(loc, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT,
                                      H5P_DEFAULT);
    if (ds < 0 || H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
        fprintf(stderr, "dump_grads: cannot write dataset '%s'\n", name);
        exit(1);
    }
    H5Dclose(ds);
    H5Sclose(space);
}

static void write_attr(hid_t loc, const char *name, int64_t v) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t at = H5Acreate2(loc, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    if (at < 0 || H5Awrite(at, H5T_NATIVE_INT64, &v) < 0) die("cannot write an attribute");
    H5Aclose(at);
    H5Sclose(space);
}

int main(int argc, char **argv) {
    if (argc != 6) die("usage: dump_grads CKPT TEXTFILE B T OUT.h5");
    const char *ckpt = argv[1], *text_path = argv[2], *out = argv[5];
    const int B = (int)parse_pos(argv[3], "B"), T = (int)parse_pos(argv[4], "T");
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);

    ckpt_t ck;
    if (ckpt_read(&ck, ckpt)) die(err_message());
    size_t len = 0;
    char *text = read_file(text_path, &len);
    if (!text) {
        fprintf(stderr, "dump_grads: cannot read %s\n", text_path);
        return 1;
    }
    int32_t *ids = xcalloc(len + 1, sizeof(int32_t));
    int64_t n = 0;
    if (vocab_encode(ids, &n, &ck.vocab, text, len, 0, text_path)) die(err_message());
    if (n < (int64_t)B * T + 1) {
        fprintf(stderr, "dump_grads: %s has %lld characters; B*T+1 = %lld are needed\n", text_path,
                (long long)n, (long long)B * T + 1);
        return 1;
    }

    model_t m;
    ckpt_model(&m, &ck);
    model_acts_t a;
    model_acts_alloc(&a, &m, B, T, 0);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            a.inputs[t * B + b] = ids[(int64_t)b * T + t];
            a.targets[t * B + b] = ids[(int64_t)b * T + t + 1];
        }
    hsize_t tb[2] = {(hsize_t)T, (hsize_t)B};

    size_t nstate = (size_t)m.d.layers * B * m.d.H;
    float *h = xcalloc(nstate, sizeof(float)), *c = xcalloc(nstate, sizeof(float));
    float *grads = xcalloc((size_t)m.nparams, sizeof(float));
    double sum = model_forward(&a, h, m.ops->has_c ? c : NULL, &m, T, NULL,
                               1.0f / (float)((int64_t)B * T), 1);
    model_backward(grads, &a, &m, T, NULL);
    double mean = sum / ((double)B * T);

    hid_t f = H5Fcreate(out, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "dump_grads: cannot create %s\n", out);
        return 1;
    }
    write_dset(f, "loss", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 0, NULL, &mean);
    write_dset(f, "loss_sum", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 0, NULL, &sum);
    write_dset(f, "inputs", H5T_NATIVE_INT32, H5T_STD_I32LE, 2, tb, a.inputs);
    write_dset(f, "targets", H5T_NATIVE_INT32, H5T_STD_I32LE, 2, tb, a.targets);
    write_attr(f, "B", B);
    write_attr(f, "T", T);
    hid_t g = H5Gcreate2(f, "grad", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) die("cannot create group /grad");
    for (int i = 0; i < m.ntensors; i++) {
        const model_tensor_t *x = &m.tensors[i];
        hsize_t dims[2] = {(hsize_t)x->shape[0], (hsize_t)x->shape[1]};
        write_dset(g, x->name, H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, x->ndim, dims,
                   grads + x->offset);
    }
    H5Gclose(g);
    if (H5Fclose(f) < 0) die("error closing the output file");
    printf("loss %.9g over %d streams x %d steps, %d tensors\n", mean, B, T, m.ntensors);

    free(grads), free(h), free(c), free(ids), free(text);
    model_acts_free(&a);
    model_free(&m);
    ckpt_free(&ck);
    return 0;
}
