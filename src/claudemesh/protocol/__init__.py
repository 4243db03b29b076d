"""Pure protocol logic shared by daemon and broker: no sockets, databases or clocks."""
