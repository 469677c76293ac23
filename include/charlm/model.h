/* model: the network — embedding (V, E), a stack of recurrent layers (cells.h; optionally
 * layer-normalised), dropout on each layer's output (and the other regularisations of
 * src/README.md §3), the decoder (V, H) + bias or the embedding tied to it — with one flat
 * parameter buffer and named views, and the forward and backward passes over one window of T
 * steps for B streams.
 *
 * All activations are laid out time-major: row t*B + b is stream b at step t. The gradient
 * buffer and the optimizer moments use the parameter layout, so model_views() serves them all. */
#ifndef CHARLM_MODEL_H
#define CHARLM_MODEL_H

#include <stdint.h>

#include "charlm/cells.h"
#include "charlm/kern.h"

#define MODEL_MAX_LAYERS 16
/* the embedding, 4 per layer (8 with layer normalisation of an LSTM), the decoder's 2 */
#define MODEL_MAX_TENSORS (3 + 8 * MODEL_MAX_LAYERS)

/* Address space that the libraries map once the passes run, against the limits of address space
 * (ulimit -v, -d) of a memory check: OpenBLAS's buffer of 128 MiB at its first call on a thread,
 * touched only in part (it retries forever when the mapping fails), MPI's and HDF5's. */
#define MODEL_LIB_VM (160.0 * 1024 * 1024)

/* The kinds of tensor of the parameter layout, in layout order: the embedding, those of each
 * layer l in turn (the four weights and biases, then with layer normalisation its gains, and for
 * an LSTM the cell state's gain and bias), the decoder's two (one when tied). */
typedef enum {
    MODEL_T_EMB,    /* (V, E) embedding.weight */
    MODEL_T_W_IH,   /* (G*H, In_l) rnn.weight_ih_l{l}; In_0 = E, else H */
    MODEL_T_W_HH,   /* (G*H, H) rnn.weight_hh_l{l} */
    MODEL_T_B_IH,   /* (G*H) rnn.bias_ih_l{l} */
    MODEL_T_B_HH,   /* (G*H) rnn.bias_hh_l{l} */
    MODEL_T_LN_IH,  /* (G*H) rnn.ln_weight_ih_l{l}: gain of the normalised x W_ih^T (ln) */
    MODEL_T_LN_HH,  /* (G*H) rnn.ln_weight_hh_l{l}: gain of the normalised h W_hh^T (ln) */
    MODEL_T_LN_C_W, /* (H) rnn.ln_weight_c_l{l}: gain of the normalised cell state (ln, lstm) */
    MODEL_T_LN_C_B, /* (H) rnn.ln_bias_c_l{l}: its bias (ln, lstm) */
    MODEL_T_DEC_W,  /* (V, H) decoder.weight; tied: the embedding itself (no tensor of its own) */
    MODEL_T_DEC_B   /* (V) decoder.bias */
} model_tensor_kind_t;

/* The architecture as configured (section [model]); the vocabulary comes from the corpus.
 * tie: the decoder's weight is the embedding (needs embed == hidden); layer_norm: the layers
 * normalise their input and recurrent projections (and an LSTM its cell state), src/README.md
 * §3. */
typedef struct {
    cell_kind_t cell;
    int layers, hidden, embed;
    int tie, layer_norm;
} model_params_t;

typedef struct {
    cell_kind_t cell;
    int V, E, H, layers, G; /* G = gates per cell */
    int tie, ln;            /* model_params_t's tie, layer_norm */
} model_dims_t;

/* Named views into one flat buffer of the parameter layout. */
typedef struct {
    float *emb;                      /* (V, E) embedding.weight */
    float *w_ih[MODEL_MAX_LAYERS];   /* (G*H, In_l) rnn.weight_ih_l{l}; In_0 = E, else H */
    float *w_hh[MODEL_MAX_LAYERS];   /* (G*H, H) rnn.weight_hh_l{l} */
    float *b_ih[MODEL_MAX_LAYERS];   /* (G*H) rnn.bias_ih_l{l} */
    float *b_hh[MODEL_MAX_LAYERS];   /* (G*H) rnn.bias_hh_l{l} */
    float *ln_ih[MODEL_MAX_LAYERS];  /* (G*H) rnn.ln_weight_ih_l{l}; NULL without ln */
    float *ln_hh[MODEL_MAX_LAYERS];  /* (G*H) rnn.ln_weight_hh_l{l}; NULL without ln */
    float *ln_c_w[MODEL_MAX_LAYERS]; /* (H) rnn.ln_weight_c_l{l}; NULL but for ln lstm */
    float *ln_c_b[MODEL_MAX_LAYERS]; /* (H) rnn.ln_bias_c_l{l}; NULL but for ln lstm */
    float *dec_w;                    /* (V, H) decoder.weight; = emb when tied */
    float *dec_b;                    /* (V) decoder.bias */
} model_views_t;

/* One named tensor of the layout (PyTorch's state_dict names), for checkpoints and interop. */
typedef struct {
    char name[48];
    int64_t offset; /* in floats from the start of the flat buffer */
    int ndim;
    int64_t shape[2];
} model_tensor_t;

typedef struct {
    model_dims_t d;
    const cell_ops_t *ops;
    int64_t nparams;
    int ntensors;
    model_tensor_t tensors[MODEL_MAX_TENSORS];
    float *params; /* (nparams) owned */
    model_views_t p;
} model_t;

/* Per-window activations and scratch, for at most B streams and T steps. Allocated once. */
typedef struct {
    int B, T;
    size_t bytes;                             /* allocated for this window, for memory reports */
    int dropout_on;                           /* the last forward applied dropout */
    int32_t *inputs, *targets;                /* (T, B) ids; target -1 = not scored */
    float *x;                                 /* (T, B, E) embedded inputs; NULL when folded */
    float *proj;                              /* (V, G*H) folded: emb W_ih0^T + b_ih0, then its
                                                 gradient in backward; NULL when not folded */
    float *gates[MODEL_MAX_LAYERS];           /* (T, B, G*H) input projections -> activations */
    float *aux[MODEL_MAX_LAYERS];             /* (T, B, H) gru only */
    float *h[MODEL_MAX_LAYERS];               /* (T+1, B, H) h[0] = carried-in state */
    float *c[MODEL_MAX_LAYERS];               /* (T+1, B, H) lstm only */
    float *mask[MODEL_MAX_LAYERS];            /* (T, B, H) dropout scale; NULL when no dropout */
    float *dropped[MODEL_MAX_LAYERS];         /* (T, B, H) h * mask; NULL when no dropout */
    int input_drop_on, embed_drop_on, weight_drop_on; /* the last forward applied them */
    float *mask_in;                           /* (T, B, E) scale of x (dropout_input) or NULL */
    float *row_mask;                          /* (V) scale of each embedding row or NULL */
    float *emb_drop;                          /* (V, E) the embedding * row_mask or NULL */
    float *whh_mask[MODEL_MAX_LAYERS];        /* (G*H, H) DropConnect scale of W_hh or NULL */
    float *whh_drop[MODEL_MAX_LAYERS];        /* (G*H, H) W_hh * whh_mask or NULL */
    float *ddec;                              /* (V, H) tied: the decoder's part of d emb */
    /* layer normalisation (NULL without it): the normalised values and 1/std of each gate block
     * of each row; for layer 0 folded, of the rows of proj */
    float *xhat_ih[MODEL_MAX_LAYERS];         /* (T, B, G*H) or (V, G*H) */
    float *rstd_ih[MODEL_MAX_LAYERS];         /* (T, B, G) or (V, G) */
    float *xhat_hh[MODEL_MAX_LAYERS];         /* (T, B, G*H) */
    float *rstd_hh[MODEL_MAX_LAYERS];         /* (T, B, G) */
    float *chat[MODEL_MAX_LAYERS];            /* (T, B, H) lstm: the normalised cell state */
    float *crstd[MODEL_MAX_LAYERS];           /* (T, B) lstm */
    float *zeros;                             /* (G*H) a bias of zeros for the bare products */
    float *dscratch;                          /* (G*H) the discarded gradient of zeros */
    float *logits;                            /* (T, B, V) -> d loss / d logits */
    float *gh;                                /* (B, G*H) per-step recurrent product */
    float *dgates;                            /* (T, B, G*H) */
    float *dgh;                               /* (T, B, G*H) gru only, else = dgates */
    float *dout_a, *dout_b;                   /* (T, B, max(E, H)) ping-pong layer gradients */
    float *dh, *dh_prev, *dc;                 /* (B, H) */
    float *dh_steps[MODEL_MAX_LAYERS];        /* (T, B, H) MODEL_ACTS_DH_STEPS only: backward
                                                 leaves d loss / d h of layer l after step t */
    kern_mat_t whh;                           /* W_hh of the layer in progress, packed for the
                                                 per-step products (kern.h) */
    kern_mat_t mm;                            /* the whole products' rounded operands (bf16;
                                                 kern_matmul) */
} model_acts_t;

/* Dropout for one forward pass (src/README.md §3): every p = 0, or eval mode (drop NULL), means
 * none. Each mask is a function of its key (src/README.md §1) — (seed, step, layer, global
 * stream first_stream + b) for the per-stream masks, (seed, step, layer) for the weights and
 * (seed, step) for the embedding rows — so neither the rank count nor a resume changes it. */
typedef struct {
    float p;        /* model.dropout: on each layer's output */
    int locked;     /* model.dropout_kind = locked: one mask per stream and window for p */
    float p_input;  /* model.dropout_input: locked, on the embedding output (layer 0's input) */
    float p_embed;  /* model.dropout_embed: whole rows (characters) of the embedding */
    float p_weight; /* model.weight_drop: DropConnect on every W_hh */
    uint64_t seed;
    int64_t step;
    int64_t first_stream;
} model_dropout_t;

/* Fills d from the architecture p and the vocabulary size V. */
void model_dims(model_dims_t *d, const model_params_t *p, int V);

/* FLOPs of one forward + backward pass per character as the model is defined (nominal): 6 per
 * element of every weight matrix (W_ih, W_hh of each layer, the decoder); element-wise work and
 * the embedding are not counted. */
double model_flops_per_char(const model_t *m);

/* The same FLOPs as a's passes execute them: with the embedding folded into layer 0 (see
 * model_acts_alloc), W_ih0's 6 FLOPs per element per character become 6 per element per
 * vocabulary entry per window. */
double model_flops_executed_per_char(const model_t *m, const model_acts_t *a);

/* The index in the tensor table (model_layout) of the tensor of kind k, of layer l for the
 * per-layer kinds (l is ignored for the others). The one place that knows the table's order. */
int model_tensor_index(const model_dims_t *d, model_tensor_kind_t k, int l);

/* Number of floats of the parameter layout; fills the tensor table when t is not NULL. */
int64_t model_layout(const model_dims_t *d, model_tensor_t *t /* (MODEL_MAX_TENSORS) */,
                     int *ntensors);

/* The floats of the parameter layout of d, as model_layout counts them, computed in double so
 * that no configuration overflows it: for the memory check before anything is allocated. */
double model_nparams(const model_dims_t *d);

/* Builds views of buf (a buffer of the parameter layout). */
void model_views(model_views_t *v, const model_t *m, float *buf);

/* Allocates parameters and initialises them deterministically from seed (the same on every
 * rank without communication): embedding N(0, 1), or U(-1/sqrt(H), 1/sqrt(H)) when tied to the
 * decoder; recurrent and decoder weights and biases U(-1/sqrt(H), 1/sqrt(H)) as PyTorch; LSTM
 * forget-gate bias_ih = 1 (so b_ih + b_hh starts near 1); layer-norm gains 1 and biases 0. */
void model_init(model_t *m, const model_dims_t *d, uint64_t seed);
void model_free(model_t *m);

/* Flags of model_acts_alloc. */
enum {
    MODEL_ACTS_DROPOUT = 1,        /* allocate the dropout masks of the layers' outputs */
    MODEL_ACTS_UNFOLDED = 2,       /* never fold the embedding (tests compare both ways) */
    MODEL_ACTS_DROPOUT_INPUT = 4,  /* the mask of the embedding output; never folds */
    MODEL_ACTS_DROPOUT_EMBED = 8,  /* the embedding-row mask */
    MODEL_ACTS_WEIGHT_DROP = 16,   /* the masked W_hh of every layer */
    MODEL_ACTS_DH_STEPS = 32,      /* keep d loss / d h of every step (gradflow) */
    MODEL_ACTS_BF16 = 64           /* every matrix product in bf16 (model.precision) */
};

/* The flags of model_acts_alloc that the dropouts of drop need (drop NULL: none). */
int model_dropout_flags(const model_dropout_t *drop);

/* Allocates activations for B streams and T steps. The inputs are one-hot, so layer 0's input
 * projection W_ih0 emb[id] + b_ih0 is row id of the (V, G*H) table emb W_ih0^T + b_ih0: when the
 * vocabulary is at most half the window's B*T rows (and MODEL_ACTS_UNFOLDED is not given), the
 * passes compute that table once per window instead of the projection of every row, and its
 * gradient instead of W_ih0's over every row; this "folds" the embedding into layer 0. */
/* The per-step recurrent products go through kern.h on kern_path_auto's path (for T = 1, a
 * single step per pass as sampling runs, through cblas_sgemm: there is nothing to amortise
 * the packing over), the whole products (input projections, weight gradients, dX, decoder)
 * through kern_matmul: cblas_sgemm at fp32; with MODEL_ACTS_BF16 all of them in bf16. */
void model_acts_alloc(model_acts_t *a, const model_t *m, int B, int T, int flags);
void model_acts_free(model_acts_t *a);

/* The bytes that model_acts_alloc allocates for a model of dims d (its a->bytes), computed
 * without allocating and in double, so that no configuration overflows it. */
double model_acts_bytes(const model_dims_t *d, int B, int T, int flags);

/* Before a forward-only pass over windows of B streams x T steps is allocated (eval): whether its
 * activations (model_acts_bytes, no dropout), its carried state h and c (layers, B, H) and `extra`
 * bytes more that the caller allocates fit what this process may still allocate (its share of the
 * node's memory among `sharers` processes; fileio_mem_available). Returns CHARLM_OK, or
 * CHARLM_EINPUT with err_set: "OPTION B: not enough memory: windows of B streams x T steps need
 * X (...), Y available (WHAT)". */
int model_window_fits(const model_dims_t *d, int B, int T, double extra, int sharers,
                      const char *option);

/* Forward over a->inputs (T, B) for T <= a->T steps, from the carried state (layers, B, H)
 * state_h / state_c (state_c NULL unless lstm), which it replaces with the state after step T.
 * Returns the summed loss over positions whose target >= 0. With grad, leaves in a->logits the
 * gradient of scale * that sum for model_backward. */
double model_forward(model_acts_t *a, float *state_h, float *state_c, const model_t *m, int T,
                     const model_dropout_t *drop, float scale, int grad);

/* Lets the caller communicate while backward still runs: ready(from) says that the gradients of
 * the parameter layout from offset `from` to its end are final (called with decreasing `from`:
 * decoder, top layer, ..., first layer, embedding = 0); poll() is called between time steps. */
typedef struct {
    void (*ready)(int64_t from, void *ctx);
    void (*poll)(void *ctx);
    void *ctx;
} model_hooks_t;

/* Backward over the window of the last model_forward (with grad): writes the gradient into
 * grads (parameter layout; every element overwritten, whatever it held). Gradients do not flow
 * into the carried-in state. hooks may be NULL. With MODEL_ACTS_DH_STEPS, also leaves in
 * a->dh_steps[l] (row t*B + b) the gradient with respect to layer l's hidden state after step t,
 * through every later step of the window (what `charlm gradflow` measures). */
void model_backward(float *grads, model_acts_t *a, const model_t *m, int T,
                    const model_hooks_t *hooks);

#endif
