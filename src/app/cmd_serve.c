/* Placeholder until this subcommand lands. */
#include "app/app.h"

#include <stdio.h>

int app_cmd_serve(int argc, char **argv)
{
	(void)argc;
	fprintf(stderr, "mesh-llm: '%s' is not built yet\n", argv[0]);
	return 1;
}
