#include "charlm/cells.h"

#include "charlm/err.h"

const char *const cell_kind_names[CELL_KINDS] = {"rnn", "lstm", "gru"};

const char *cell_kind_name(cell_kind_t k) {
    return err_enum_name(cell_kind_names, CELL_KINDS, (int)k);
}

int cell_kind_value(const char *s) { return err_enum_value(cell_kind_names, CELL_KINDS, s); }

const cell_ops_t *cell_ops(cell_kind_t k) {
    switch (k) {
    case CELL_RNN: return &cell_rnn_ops;
    case CELL_LSTM: return &cell_lstm_ops;
    case CELL_GRU: return &cell_gru_ops;
    case CELL_KINDS: break;
    }
    err_abort(__FILE__, __LINE__, "unknown cell kind");
}
