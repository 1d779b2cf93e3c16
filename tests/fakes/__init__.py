"""Test doubles that speak the hosted APIs' real wire protocols over real sockets."""
