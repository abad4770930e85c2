/* A plugin built for another ABI: mailbridge must refuse it at start-up. */
#include <mailbridge/plugin.h>

const struct mb_plugin mailbridge_plugin = { .abi = MB_PLUGIN_ABI + 98, .name = "badabi", .types = MB_TYPE_SMS };
