"""HTTP/2 pieces shared by the h2 server frontend and the h2 client transport."""
