class WebSocketCycle:  # TEMPORARY STUB
    pass


def websocket_scope(scope):
    return scope
