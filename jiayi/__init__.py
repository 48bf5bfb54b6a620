"""jiayi (家医): composition root: settings, bootstrap and the command line."""
