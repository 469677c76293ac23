#include "charlm/cells.h"

#include "charlm/err.h"

const cell_ops_t *cell_ops(cell_kind_t k) {
    switch (k) {
    case CELL_RNN: return &cell_rnn_ops;
    case CELL_LSTM: return &cell_lstm_ops;
    case CELL_GRU: return &cell_gru_ops;
    }
    err_abort(__FILE__, __LINE__, "unknown cell kind");
}
