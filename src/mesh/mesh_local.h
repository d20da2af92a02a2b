/* Local machine state the mesh needs: the node key file and the models on
 * disk. */
#ifndef MESH_LOCAL_H
#define MESH_LOCAL_H

#include "mesh/mesh_gossip.h"
#include "net/net_ident.h"

#include <stdbool.h>
#include <stddef.h>

/* Where the node key lives: |override| when non-NULL, else
 * $HOME/.mesh-llm/key. Returns 0, ML_ERR_NOT_FOUND ($HOME unset) or
 * ML_ERR_RANGE (|cap| too small). */
int mesh_ident_path(char *out, size_t cap, const char *override);
/* The node identity: with |ephemeral| a fresh key that is not saved (lite
 * clients), else the key file at mesh_ident_path(|override|), created with
 * mode 0600 (and its directory with 0700) on first run. |*created| (may be
 * NULL) tells whether a new key was made. Returns 0 or a negative
 * ML_ERR_*. */
int mesh_ident_load(struct net_ident *id, const char *override, bool ephemeral, bool *created);

/* Lists the GGUF files under |dir| (NULL = $HOME/.models), two directory
 * levels deep: name = path relative to |dir|, bytes = file size. Split
 * files ("-00002-of-00003.gguf") other than the first part are skipped.
 * Writes at most |cap| entries sorted by name and returns how many (0 when
 * the directory does not exist). */
int mesh_models_scan(const char *dir, struct mesh_model_info *out, size_t cap);

#endif
