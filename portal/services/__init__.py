"""Services: every write of the portal, one module per `<entity>_<action>` family."""
