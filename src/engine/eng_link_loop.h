/* A stage_link (eng_link.h) whose stages all run in this process: each
 * stage is its own model object, loaded with its layer range from the same
 * GGUF, with its own KV cache. Used to test split inference without a
 * network, and as the reference the network link (mesh_stage.h) must
 * match: greedy output identical to the solo engine. */
#ifndef ENG_LINK_LOOP_H
#define ENG_LINK_LOOP_H

#include "engine/eng_link.h"

#define ENG_LINK_LOOP_MAX_STAGES 16

/* A link for the stages after the engine's own: |bounds| holds the first
 * layer of each of them, in increasing order (the first equals the
 * engine's layer_end; the last stage runs to n_layer), |n_stages| of them
 * (1..ENG_LINK_LOOP_MAX_STAGES). The models are loaded from |path| by
 * start(). *out is owned by the caller (or by the engine with link_owned);
 * free it with its free(). Returns 0, ML_ERR_INVALID or ML_ERR_NOMEM. */
int eng_link_loop_new(struct eng_link **out, const char *path, const int *bounds, int n_stages);

#endif
