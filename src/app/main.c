/* mesh-llm entry point: dispatches to a subcommand; with none, serves. */
#include "app/app.h"

#include <stdio.h>
#include <string.h>

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *help;
} commands[] = {
	{"gguf-info", app_cmd_gguf_info, "print a GGUF file's metadata and tensor table"},
	{"tokenize", app_cmd_tokenize, "print the token ids of a text"},
	{"generate", app_cmd_generate, "generate text from a prompt"},
	{"bench", app_cmd_bench, "measure prompt and generation speed"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: mesh-llm [OPTIONS]            serve the OpenAI API (see --help)\n"
		   "       mesh-llm COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
	fprintf(f, "\n`mesh-llm COMMAND --help` describes each command.\n");
}

int main(int argc, char **argv)
{
	if (argc >= 2 && argv[1][0] != '-') {
		for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
			if (strcmp(argv[1], commands[i].name) == 0)
				return commands[i].run(argc - 1, argv + 1);
		fprintf(stderr, "mesh-llm: unknown command '%s'\n\n", argv[1]);
		usage(stderr);
		return 2;
	}
	return app_cmd_serve(argc, argv);
}
