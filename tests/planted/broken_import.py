import this_module_does_not_exist  # noqa: F401  (planted: the plugin's own import fails)


def make_data():
    return {}
