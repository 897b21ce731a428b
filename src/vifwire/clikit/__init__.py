"""Click building blocks shared by the command-line front ends (``vifwire``
and ``vifwire agent``): host, host-fact, guest and logging options parsed the
same way everywhere. A library like the CNI plugins' ``pkg/``: the front ends
import it, it imports no front end."""
