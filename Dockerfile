# EventflowDB container image: not written yet. It will be a multi-stage
# Debian 12 build of the server once the network layer lands (README.md, "Deployment").
