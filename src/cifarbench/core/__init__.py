"""The ground floor every other package stands on: name registries and ConfigError, atomic files,
device and precision, the training clock, the processes of a distributed run. Imports nothing of cifarbench
but itself."""
